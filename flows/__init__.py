"""Prefect flows that wire the stages in ``curation`` and place parallel work on Ray."""
