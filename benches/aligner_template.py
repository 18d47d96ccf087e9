"""The paper's Aligner prompt, as alens renders it by default (`DEFAULT_TEMPLATE` in probe/src/model/template.rs), for the
Python benches that run the same job in HF transformers. `python benches/X.py` puts this
directory on the import path."""

TEMPLATE = ("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more "
            "helpful and harmless: {question} | {answer} ASSISTANT:")
