import mmssl  # noqa: F401
