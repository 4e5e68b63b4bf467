"""Drop-ins for other libraries' entry points (docs/INTEGRATIONS.md).

    immiscible_ops.integrations.torchcfm   torchcfm's OTPlanSampler and OT flow matchers, with
                                           method="exact" solved by this package (torchcfm and
                                           POT optional)

scipy.optimize.linear_sum_assignment's drop-in is immiscible_ops.linear_sum_assignment.
"""
