"""`accel profile`: the measuring passes, the typed data they return, the analyzers (pure over that
data), the report model and its renderings to JSON, HTML and traces.
"""
