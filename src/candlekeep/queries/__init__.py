"""The read model: every listing (CLI, HTTP API, dashboard, reports) reads through these
functions, which return typed values, so no two of them can disagree."""
