"""Third-party code that crnn carries instead of depending on it.

crnn's run-time dependencies are numpy and SciPy alone.  What is here is
copied unchanged from its release, with its license beside it:

- ``threadpoolctl.py``: threadpoolctl 3.8.0 (BSD 3-Clause,
  ``threadpoolctl.LICENSE``), https://github.com/joblib/threadpoolctl.  It
  lists the BLAS libraries the process has loaded (the loader's own list, on
  Linux, macOS and Windows) and their thread controls; ``crnn.threads`` uses
  it to hold BLAS at one thread while crnn's own team splits a call.
  To update it, copy the module of a newer release over this one.
"""
