"""The rules in force: the config file's rules imported, API changes stored, each change a version and an audit event.

Whose word counts: the latest change wins (``retention.store`` keeps every
version). At open the config file's rules are imported when they differ from
the config rules last imported; otherwise the stored rules, possibly changed
over the API since, stay in force. Stored rules that no longer pass the floor
(the config's ``retention.min_age`` was raised since) are replaced by the
config file's rules, loudly: an ERROR log line and a ``retention.rules.reset``
audit event.

Every rule set taken here passes ``nvr.config.retention.with_floor`` first, so
none deletes footage younger than ``retention.min_age``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from nvr.base.errors import NotFound
from nvr.base.times import now_ms
from nvr.config.retention import RetentionRuleError, RuleSet, parse_rules, rules_to_dict, with_floor
from retention.legalholds import AuditFn
from retention.store import RetentionStore, StoredRules
from storage.audit import SYSTEM

log = logging.getLogger("nvr.retention")


class NoCameraRule(NotFound, KeyError):
    """The camera has no override of its own: it follows the default."""

    def __str__(self) -> str:
        return self.args[0]  # KeyError's str() would quote the message


class RulesInForce:
    """The current :class:`StoredRules`, and the only way to change them."""

    def __init__(self, rstore: RetentionStore, *, config_rules: RuleSet, floor: float, audit: AuditFn):
        self._rstore = rstore
        self.floor = floor
        self._config = with_floor(config_rules, floor)
        self._audit = audit
        self._lock = asyncio.Lock()  # one change at a time: each reads the version it replaces
        self._stored: StoredRules | None = None

    @property
    def stored(self) -> StoredRules:
        """The rules in force with their version and origin (after :meth:`load`)."""
        assert self._stored is not None, "RulesInForce.load() first"
        return self._stored

    async def load(self, *, import_config: bool) -> StoredRules:
        """The rules in force at open; ``import_config`` (a server) imports the config file's when they changed."""
        rstore, cfg = self._rstore, self._config
        if import_config:
            old, cur = await asyncio.to_thread(rstore.import_config_rules, cfg, now_ms=now_ms())
            if cur is not old:
                await self._audit("retention.rules.update", "retention", {
                    "source": "config file", "old": rules_to_dict(old.rules) if old else None,
                    "new": rules_to_dict(cur.rules), "version": cur.version}, SYSTEM)
        else:
            cur = await asyncio.to_thread(rstore.current_rules)
            if cur is None:  # nothing stored yet (a preview before any server ran): the file's, not saved
                self._stored = StoredRules(cfg, 0, "config", now_ms(), "config file", None)
                return self._stored
        try:
            with_floor(cur.rules, self.floor)
        except RetentionRuleError as e:
            log.error("the retention rules in force (version %d, %s) fail the config's retention.min_age "
                      "floor (%s); the config file's rules replace them", cur.version, cur.source, e)
            old, cur = await asyncio.to_thread(rstore.put_rules, cfg, actor="config file", now_ms=now_ms(),
                                               source="config")
            await self._audit("retention.rules.reset", "retention", {
                "error": str(e), "old": rules_to_dict(old.rules) if old else None,
                "new": rules_to_dict(cur.rules), "version": cur.version}, SYSTEM)
        self._stored = cur
        return cur

    def parse(self, data: Mapping[str, Any]) -> RuleSet:
        """A rule set in JSON form checked against the floor (raises RetentionRuleError naming the field)."""
        return parse_rules(data, self.floor)

    async def put(self, rules: RuleSet, actor: tuple[str, str]) -> StoredRules:
        """Make ``rules`` the rules in force (a new version, audited with the old and new values)."""
        rules = with_floor(rules, self.floor)
        async with self._lock:
            old, new = await asyncio.to_thread(self._rstore.put_rules, rules, actor=actor[0], now_ms=now_ms())
            self._stored = new
        await self._audit("retention.rules.update", "retention", {
            "old": rules_to_dict(old.rules) if old else None, "new": rules_to_dict(new.rules),
            "version": new.version}, actor)
        return new

    async def put_camera(self, camera: str, rule_data: Mapping[str, Any], actor: tuple[str, str]) -> StoredRules:
        """Replace ``camera``'s override with ``rule_data`` (JSON form), checked as part of the whole set."""
        async with self._lock:
            data = rules_to_dict(self.stored.rules)
            old = data["cameras"].get(camera)
            data["cameras"][camera] = rule_data
            new = await self._put_locked(self.parse(data), actor)
        await self._audit("retention.rules.camera", camera, {
            "old": old, "new": rules_to_dict(new.rules)["cameras"].get(camera), "version": new.version}, actor)
        return new

    async def delete_camera(self, camera: str, actor: tuple[str, str]) -> StoredRules:
        """Remove ``camera``'s override (:class:`NoCameraRule` when it has none)."""
        async with self._lock:
            if camera not in self.stored.rules.cameras:
                raise NoCameraRule(f"camera {camera!r} has no retention override (it follows the default)",
                                   camera=camera)
            data = rules_to_dict(self.stored.rules)
            old = data["cameras"].pop(camera)
            new = await self._put_locked(self.parse(data), actor)
        await self._audit("retention.rules.camera", camera, {"old": old, "new": None, "version": new.version},
                          actor)
        return new

    async def _put_locked(self, rules: RuleSet, actor: tuple[str, str]) -> StoredRules:
        _, new = await asyncio.to_thread(self._rstore.put_rules, rules, actor=actor[0], now_ms=now_ms())
        self._stored = new
        return new
