"""The LM runtime (DESIGN §4b): a frozen causal LM plus one trainable adapter.

- `adapters`: `PrefixKV` (prefix tuning) and `Lora`, pytrees with static hyper-parameters.
- `train`: `train_adapter(lm, adapter, texts, TrainConfig, store) -> (adapter, losses)`, the one
  training loop (one `TrainState`, one jitted step, length-grouped batches, resumable).
- `score`: `score_texts(lm, adapter, texts, reducer) -> TokenScores`, the one scoring loop.
- `store`: `AdapterStore`, the checkpoint directory of a training run.

LAMDAS (a prefix + a ratio of two reductions), `ppl` (one reduction), FineZip memorisation (a
LoRA-FA adapter) and downstream evaluation (a LoRA + held-out cross-entropy) are built on it.
"""

from jaxsel.lm.adapters import Adapter, Lora, PrefixKV, adapter_hash
from jaxsel.lm.score import TokenScores, score_texts, sum_logprob
from jaxsel.lm.store import AdapterStore
from jaxsel.lm.train import TrainConfig, TrainState, check_context, train_adapter, train_tokens

__all__ = [
    "Adapter",
    "AdapterStore",
    "Lora",
    "PrefixKV",
    "TokenScores",
    "TrainConfig",
    "TrainState",
    "adapter_hash",
    "check_context",
    "score_texts",
    "sum_logprob",
    "train_adapter",
    "train_tokens",
]
