"""Dataset preparation: import + convert, audit, background, edits, framing, close-ups.

Each module has one job; `prepare.prepare` chains them for a whole set, `audit.audit_folder` reports
on one, and `cli` exposes both as `python -m lora_trainer prepare|import|audit|background|edit`.
"""
