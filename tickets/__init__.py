"""Tickets: service work orders and their history.

May import: core.
"""
