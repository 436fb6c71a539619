"""Datasets out: policies rolled out in domain-randomised digital twins, written and read as LeRobot
v3.0 datasets, and training windows read back from them. May import every other package; heavy
modules load on first use.
"""
