"""Optional plug-ins for the frameworks people train with; each imports its framework lazily.

- :mod:`i2f_fast.integrations.flower`: a Flower client mod that writes the predicted reconstruction
  risk of each training reply into the reply's metrics (extra ``i2f_fast[flower]``).
"""
