"""Nudge's pure rules and types, shared by every layer.

Menu definitions and their checks, text helpers, the contact-policy rules, channel and status
enums, the send path's payloads and durations. Nothing here does I/O or reads a clock, and
nothing here imports another package of Nudge: workflows import it through the sandbox's
passthrough, and activities, the store and the HTTP layer import it directly.
"""
