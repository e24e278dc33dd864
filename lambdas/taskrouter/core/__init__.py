"""The routing core: prompting, output validation, event derivation and fallback policy.

Plain Python with no AWS call in it: backends and the registry are passed in, so the same core
serves the Lambda, local mode and evaluation, and is tested without mocks.
"""
