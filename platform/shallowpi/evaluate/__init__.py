"""Closed-loop evaluation of a policy in the simulation twin: success rate over seeded
episodes (`sim_eval`), and a trained checkpoint as the policy under test (`sim_checkpoint`).
"""
