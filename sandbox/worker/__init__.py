"""The in-environment side: what runs inside zygotes and execution environments.

Nothing here knows about queues, policies or other functions. Modules stay
light on imports because every cold start pays for them.
"""
