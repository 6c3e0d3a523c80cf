"""The tuning database and device identity: SQLite records of every measurement, each with its device, workload,
backend, template, toolchain versions and failure kind (store.py, schema migrations included), and the device
fingerprint and key they are filed under (device.py)."""
