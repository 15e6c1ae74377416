"""Retention rules, holds and the sweep that deletes (see docs/retention.md).

Stages: ``policy`` (the pure decision), ``rules`` (the config's floor),
``store`` (persistence in the index), ``holds`` (holds and S3 legal holds),
``sweep`` (two-phase deletion, preview), ``scheduler`` (the APScheduler job);
``service.RetentionService`` is what the server, the API and the CLI use.
"""
