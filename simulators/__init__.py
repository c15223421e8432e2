"""Simulated sCMOS microscope: camera model, sample, optics, and a real Micro-Manager core."""
