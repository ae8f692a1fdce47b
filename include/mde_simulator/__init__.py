"""HTTPS stand-in for Microsoft Entra ID and the Defender for Endpoint alerts API.

Run: python -m mde_simulator --state-dir DIR [options]   (see README.md and --help)
From Python: mde_simulator.process.SimulatorProcess.
"""
