"""A DPS stand-in: enrollments, X.509 chain validation, the custom allocation webhook call, device creation.

- simulator.py: what DPS does for one device registration (DpsSimulator.register), individual enrollments first,
  re-provisioning included (linked_hub.py: the self-signed X.509 identity, updated with a new certificate);
- service.py: the service API emulator (`python -m local.dps serve`): individual enrollments over HTTPS, as the
  product's adapter shared/dps.py writes them (a revoked device's disabled enrollment), and enrollment groups with
  a primary and secondary signing CA (a CA being rolled); store.py keeps them under
  {state dir}/dps/enrollments.json, where the simulator (another process) reads them;
- `python -m local.dps enrollments` lists them.
"""
