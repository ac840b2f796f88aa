"""Request and response models of the API, a module per resource (``XCreate`` in, ``XPublic`` /
``XsPublic`` out)."""
