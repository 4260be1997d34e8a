"""One typed config for all of params.yaml, validated before any stage works.

- :mod:`salbench.config.sections`: pydantic models of every section (unknown keys, types, ranges);
- :mod:`salbench.config.declare`: how registered methods and metrics declare their params;
- :mod:`salbench.config.validate`: ``validate_params``/``preflight``: the whole file, every error a ParamsError
  naming the key path and the fix.

``python -m salbench.config methods`` (or ``metrics``) lists each registered name with its params, types,
ranges and defaults; ``python -m salbench.config check [params.yaml]`` validates a file.
This package's ``__init__`` imports nothing, so the method and metric modules can import ``declare``.
"""
