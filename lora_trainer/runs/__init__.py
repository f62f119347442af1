"""Runs, seen from outside the trainer: what a UI needs to start, adopt, follow, list and publish them.

    layout          a run's file and folder names and its event kinds: the one definition the trainer
                    writes through and everything else reads through
    runner          one trainer process at a time: start, stop, resume, adopt after a restart
    follow          events.jsonl and the console log read while a run goes on; `RunStatus`
    trainer_record  the record of a running trainer, so a restarted UI finds it again
    lora_files      a project's saved LoRA files and the output names they take
    publish         a saved LoRA made visible in the WebUI's LoRA folder

No torch and no gradio here.
"""
