"""A DPS stand-in: enrollments, X.509 chain validation, the custom allocation webhook call, device creation.

- simulator.py: what DPS does for one device registration (DpsSimulator.register), individual enrollments first;
- service.py: the service API emulator (`python -m local.dps serve`): individual enrollments over HTTPS, as the
  product's adapter shared/dps.py writes them (a revoked device's disabled enrollment); store.py keeps them under
  {state dir}/dps/enrollments.json, where the simulator (another process) reads them;
- `python -m local.dps enrollments` lists them.
"""
