"""ecgedge.deploy: the host-side tools that put a bundle on a device: ``pack`` (one archive with
the wheel, the bundle, the installer in ``packfiles/`` and the self-test windows), ``push`` (ssh
and scp), the owner's signing key and signatures (``cli_sign``), and ``pi/`` (the arm64 proof
under qemu). None of it runs on the device; what the installed pack runs there (the runtime,
``ecgedge device selftest``, signature checks) lives in ``device``.

Imports: deploy -> device (the bundle, the runtime and the self-test it records at pack time).
"""
