"""Diagnosis off the live path: the multivariate detector scored over recorded series
(``ironsight diagnose-csv``, ``bench/skab.py``). The live workers do not run it: machines change
operating mode every few minutes and a reference-deviation detector flags every change.
"""
