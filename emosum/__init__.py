"""QLoRA fine-tuning, generation and evaluation of structured summaries of long psychological-counselling case reports (LongEmotion Emotion Summary).

Modules:

- `emosum.training`: LoRA on a 4-bit (or 8-bit, or unquantised) base: model preparation, supervised examples, the `Trainer` loop with resumable checkpoints, the answer-only fast path, and the adapter export."""

__version__ = "0.0.1"
