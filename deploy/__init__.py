"""Deployment on real gateways: PKI, SuperLink/SuperNode commands, a namespace test bed."""
