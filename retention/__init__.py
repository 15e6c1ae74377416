"""Retention: the rules in force, holds, and the sweep that deletes (see docs/retention.md).

Modules, lowest first: ``policy`` (the pure plan), ``store`` (this stage's
tables in the index), ``holds`` (a hold's request, record and JSON form),
``legalholds`` (placing and releasing holds, S3 legal holds), ``rules`` (the
rules in force and their changes), ``sweep`` (two-phase deletion, preview),
``scheduler`` (the periodic job), ``storagefull`` (the low-disk sweep and
alarm); ``service.RetentionService`` is what the server, the API and the CLI
use. The rule model itself is ``nvr.config.retention``.
"""
