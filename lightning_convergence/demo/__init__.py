"""The ``lightning-convergence demo``: a faulty run, without and with the suite."""
