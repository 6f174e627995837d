"""Helpers that start emulators (ipmi_sim, sushy-emulator, sshd) and fakes for the fault tests.

Test files put ``tests/`` on sys.path and import ``emulators.<module>``.
"""
