"""Test configuration: 8 virtual CPU devices for the sharding tests.

The flag must be set before JAX initialises its backends; tests that need a
single device simply use the default device.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
