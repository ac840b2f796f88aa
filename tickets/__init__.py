"""Tickets: service work orders and their history.

- ``workflow``: the state machine as data (actions, the states they apply in, where they lead).
- ``service``: creation (idempotent), actions, callback surveys, listing; SQL of the tickets tables.
- ``sla``: deadlines per customer contract and the scheduler (``SlaWorker``) that warns and flags breaches.
- ``kpis``: service KPIs over a window.

May import: core.
"""
