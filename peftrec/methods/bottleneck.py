"""The bottleneck Adapter (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP").

Each adapter is ``x + dropout(W_up · act(W_down · x + b_down) + b_up)``: a down-projection to a small
bottleneck, a nonlinearity, an up-projection back to the hidden size, and a residual. ``W_up`` and
``b_up`` start at zero, so a freshly wrapped model computes exactly what the base computes.

Placement: ``"houlsby"`` puts one adapter on the output of each decoder block's attention and one on
the output of its MLP (both before the block adds its residual); ``"pfeiffer"`` only the MLP one
(Pfeiffer et al., 2021, "AdapterFusion"), half the parameters.

Why it lives here: peft has no bottleneck adapter and outside code cannot register a new
``PeftType``; the ``adapters`` library (AdapterHub) requires transformers 4.x. So this module is a
small self-contained tuner with peft's outward shape: ``save_pretrained`` writes
``adapter_config.json`` (``"peft_type": "BOTTLENECK"``) + ``adapter_model.safetensors`` like peft does,
``from_pretrained`` restores it, ``print_trainable_parameters`` and ``merge_and_unload`` exist (the
latter refuses: a nonlinear adapter cannot be folded into the base weights).

How it attaches: forward hooks on the attention and MLP modules replace their output (the attention
module returns a tuple; element 0 is transformed). The adapters are owned by :class:`BottleneckModel`,
not inserted into the base, so the base model's parameters and state-dict keys stay exactly as they
were. Hooks run inside the decoder block's ``forward``, so gradient checkpointing recomputes them with
the block, and ``generate`` (KV cache, one new token at a time) just works: the adapter is position-wise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from peftrec.atomic import swap_in
from peftrec.errors import PeftrecError
from peftrec.models import count_parameters

PEFT_TYPE = "BOTTLENECK"
CONFIG_NAME = "adapter_config.json"  # peft's file names, so tooling that lists adapter folders finds them
WEIGHTS_NAME = "adapter_model.safetensors"
PLACEMENTS = ("houlsby", "pfeiffer")
NONLINEARITIES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
# Child names of a decoder block, tried in order (Llama/Gemma/Mistral/Qwen: self_attn + mlp; others
# use attention/attn/self_attention and feed_forward/ffn).
ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
# Keys save_pretrained writes next to the config's fields; from_dict accepts and ignores them.
_SAVED_INFO_KEYS = frozenset(
    {"peft_type", "task_type", "base_model_name_or_path", "hidden_size", "bottleneck_dim", "peftrec_version"}
)


@dataclass
class BottleneckConfig:
    """Hyperparameters of the bottleneck adapter (``conf/peft/adapter.yaml``).

    Attributes:
        bottleneck_size: width of the bottleneck. Exactly one of this and ``reduction_factor``.
        reduction_factor: bottleneck = hidden_size // reduction_factor. Exactly one of this and
            ``bottleneck_size`` (set the other to None).
        placement: ``"houlsby"`` (after attention and after MLP) or ``"pfeiffer"`` (after MLP only).
        nonlinearity: ``"relu"``, ``"gelu"`` or ``"silu"``.
        dropout: dropout on the adapter's output before the residual add (0 disables it).
        attention_module: name (or dotted path) of the attention child inside a decoder block;
            None tries ``self_attn``, ``attention``, ``attn``, ``self_attention``.
        mlp_module: the same for the MLP; None tries ``mlp``, ``feed_forward``, ``ffn``.
        layers_module: dotted path of the ``nn.ModuleList`` of decoder blocks (e.g. ``model.layers``);
            None finds it under ``model.get_decoder()``.
    """

    bottleneck_size: int | None = None
    reduction_factor: int | None = 16
    placement: str = "houlsby"
    nonlinearity: str = "relu"
    dropout: float = 0.0
    attention_module: str | None = None
    mlp_module: str | None = None
    layers_module: str | None = None

    def __post_init__(self) -> None:
        # Fail when Hydra builds the config, before any model is loaded.
        if (self.bottleneck_size is None) == (self.reduction_factor is None):
            raise PeftrecError(
                f"bottleneck adapter: set exactly one of bottleneck_size (got {self.bottleneck_size}) and "
                f"reduction_factor (got {self.reduction_factor}); e.g. peft.bottleneck_size=8 "
                "peft.reduction_factor=null, or peft.reduction_factor=16 peft.bottleneck_size=null"
            )
        for name in ("bottleneck_size", "reduction_factor"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise PeftrecError(f"bottleneck adapter: {name} must be a positive integer, got {value!r}")
        if self.placement not in PLACEMENTS:
            raise PeftrecError(
                f"bottleneck adapter: placement={self.placement!r} is not one of {', '.join(PLACEMENTS)} "
                "(houlsby: after attention and MLP; pfeiffer: after MLP only)"
            )
        if self.nonlinearity not in NONLINEARITIES:
            raise PeftrecError(
                f"bottleneck adapter: nonlinearity={self.nonlinearity!r} is not one of {', '.join(NONLINEARITIES)}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise PeftrecError(f"bottleneck adapter: dropout must be in [0, 1), got {self.dropout!r}")

    def resolve_bottleneck_size(self, hidden_size: int) -> int:
        """The bottleneck width for a model of this hidden size.

        Args:
            hidden_size: the base model's hidden size.

        Returns:
            ``bottleneck_size``, or ``hidden_size // reduction_factor``.

        Raises:
            PeftrecError: the reduction factor leaves no bottleneck (factor > hidden size).
        """
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        size = hidden_size // self.reduction_factor
        if size < 1:
            raise PeftrecError(
                f"bottleneck adapter: reduction_factor={self.reduction_factor} leaves no bottleneck for hidden size "
                f"{hidden_size}; use a factor <= {hidden_size} or set bottleneck_size"
            )
        return size

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict.

        Returns:
            ``{field: value}`` for every field.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BottleneckConfig:
        """Build a config from :meth:`to_dict` output or a saved ``adapter_config.json``.

        Args:
            data: the fields; the informational keys ``save_pretrained`` adds (``peft_type``,
                ``base_model_name_or_path``, ...) are ignored.

        Returns:
            The config.

        Raises:
            PeftrecError: an unknown key (a typo, or a folder written by another tool).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _SAVED_INFO_KEYS)
        if unknown:
            raise PeftrecError(
                f"bottleneck adapter config has unknown keys {unknown}; known: {sorted(names)}"
            )
        return cls(**{k: v for k, v in data.items() if k in names})


class BottleneckAdapter(nn.Module):
    """One adapter: ``x + dropout(up(act(down(x))))`` with ``up`` zero-initialised.

    Its weights stay in their own dtype (fp32) whatever the input's: the input is cast to it and the
    result cast back, like peft's ``autocast_adapter_dtype``, so small updates are not lost to bf16
    rounding in the optimizer.

    Args:
        hidden_size: input and output width.
        bottleneck_size: inner width.
        nonlinearity: key of :data:`NONLINEARITIES`.
        dropout: dropout probability on the adapter's output.
        device: where to create the weights.
        dtype: the weights' dtype.
    """

    def __init__(
        self,
        hidden_size: int,
        bottleneck_size: int,
        nonlinearity: str = "relu",
        dropout: float = 0.0,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size, device=device, dtype=dtype)
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(bottleneck_size, hidden_size, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # down keeps nn.Linear's Kaiming-uniform weights (as LoRA's A does) so the bottleneck carries
        # signal from the start; a zero up-projection makes the whole adapter the identity at init.
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        # Toggled by BottleneckModel.disable_adapter(); a plain attribute, not state.
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the adapter.

        Args:
            x: ``(..., hidden_size)`` activations in any float dtype.

        Returns:
            The adapted activations, in ``x``'s dtype.
        """
        h = x.to(self.down.weight.dtype)
        delta = self.dropout(self.up(self.act(self.down(h))))
        # Sum in the adapter's precision and round once (under autocast delta may be bf16).
        return (h + delta).to(x.dtype)


class _AdapterHook:
    """Forward hook that passes a module's output (or element 0 of a tuple output) through an adapter.

    A callable object rather than a closure so ``copy.deepcopy`` of the wrapped model maps it to the
    copied adapter.
    """

    def __init__(self, adapter: BottleneckAdapter, where: str) -> None:
        self.adapter = adapter
        self.where = where

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not self.adapter.enabled:
            return None
        if isinstance(output, torch.Tensor):
            return self.adapter(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (self.adapter(output[0]), *output[1:])
        raise PeftrecError(
            f"bottleneck adapter: {self.where} ({type(module).__name__}) returned {type(output).__name__}, "
            "not a tensor or a tuple starting with one; point peft.attention_module / peft.mlp_module at a "
            "submodule that returns the hidden states (e.g. self_attn.o_proj, mlp.down_proj)"
        )


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        # Multimodal models (Gemma-3 4B+) keep the decoder's size in their text config.
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise PeftrecError(
            f"bottleneck adapter: cannot read hidden_size from {type(model).__name__}'s config; "
            "the model must be a transformers model with config.hidden_size"
        )
    return size


def _resolve_child(block: nn.Module, override: str | None, defaults: tuple[str, ...]) -> str | None:
    if override:
        try:
            block.get_submodule(override)
        except AttributeError:
            return None
        return override
    children = dict(block.named_children())
    return next((name for name in defaults if name in children), None)


def _find_layers(model: nn.Module, config: BottleneckConfig) -> tuple[str, nn.ModuleList, str | None, str]:
    """Locate the decoder blocks and, inside them, the attention and MLP children.

    Returns:
        ``(layers_path, layers, attention_name or None for pfeiffer, mlp_name)``.
    """
    need_attention = config.placement == "houlsby"

    def names_in(block: nn.Module) -> tuple[str | None, str | None]:
        attn = _resolve_child(block, config.attention_module, ATTENTION_NAMES) if need_attention else None
        return attn, _resolve_child(block, config.mlp_module, MLP_NAMES)

    def usable(block: nn.Module) -> bool:
        attn, mlp = names_in(block)
        return mlp is not None and (attn is not None or not need_attention)

    if config.layers_module:
        try:
            layers = model.get_submodule(config.layers_module)
        except AttributeError as err:
            raise PeftrecError(
                f"bottleneck adapter: layers_module={config.layers_module!r} is not a submodule of "
                f"{type(model).__name__}"
            ) from err
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise PeftrecError(
                f"bottleneck adapter: layers_module={config.layers_module!r} is a {type(layers).__name__}, "
                "not a non-empty nn.ModuleList of decoder blocks"
            )
        path = config.layers_module
    else:
        # The decoder's blocks are an nn.ModuleList (peft and transformers rely on the same); take
        # the shallowest one under the decoder whose blocks have the modules we need, which skips
        # nested lists (MoE experts) and a multimodal model's vision tower.
        root: nn.Module = model
        if hasattr(model, "get_decoder"):
            # Best effort: transformers raises for a few exotic models; the whole model is searched then.
            with contextlib.suppress(Exception):
                decoder = model.get_decoder()
                if isinstance(decoder, nn.Module):
                    root = decoder
        prefix = next((name for name, module in model.named_modules() if module is root), "")
        lists = [
            (name, module)
            for name, module in root.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) > 0
        ]
        if not lists:
            raise PeftrecError(
                f"bottleneck adapter: found no nn.ModuleList of decoder blocks in {type(model).__name__}; "
                "set peft.layers_module to its dotted path (e.g. model.layers)"
            )
        lists.sort(key=lambda item: item[0].count("."))
        matching = [(name, module) for name, module in lists if usable(module[0])]
        if not matching:
            name, module = lists[0]
            block = module[0]
            children = ", ".join(child for child, _ in block.named_children())
            looked = [f"MLP {config.mlp_module or '/'.join(MLP_NAMES)}"]
            if need_attention:
                looked.insert(0, f"attention {config.attention_module or '/'.join(ATTENTION_NAMES)}")
            raise PeftrecError(
                f"bottleneck adapter: cannot find the {' and '.join(k.split()[0] for k in looked)} modules in the "
                f"decoder blocks at {'.'.join(filter(None, (prefix, name)))} ({type(block).__name__}); looked for "
                f"{' and '.join(looked)}. The block's children are: {children}. "
                "Set peft.attention_module / peft.mlp_module to the right names."
            )
        depth = matching[0][0].count(".")
        shallowest = [item for item in matching if item[0].count(".") == depth]
        if len(shallowest) > 1:
            found = ", ".join(".".join(filter(None, (prefix, name))) for name, _ in shallowest)
            raise PeftrecError(
                f"bottleneck adapter: several lists of blocks could be the decoder's ({found}); "
                "set peft.layers_module to the one to adapt"
            )
        name, layers = shallowest[0]
        path = ".".join(filter(None, (prefix, name)))
    # Every block must resolve to the same names: the saved config records one pair for all blocks.
    attention_name, mlp_name = names_in(layers[0])
    for index, block in enumerate(layers):
        attn, mlp = names_in(block)
        if usable(block) and (attn, mlp) == (attention_name, mlp_name):
            continue
        lacking = []
        if need_attention and attn != attention_name:
            lacking.append(
                f"attention module {attention_name or config.attention_module or '/'.join(ATTENTION_NAMES)}"
            )
        if mlp != mlp_name or mlp is None:
            lacking.append(f"MLP module {mlp_name or config.mlp_module or '/'.join(MLP_NAMES)}")
        children = ", ".join(child for child, _ in block.named_children())
        raise PeftrecError(
            f"bottleneck adapter: block {path}.{index} ({type(block).__name__}) has no {' and no '.join(lacking)}. "
            f"The block's children are: {children}. Set peft.attention_module / peft.mlp_module "
            "(or peft.layers_module)."
        )
    assert mlp_name is not None
    return path, layers, attention_name, mlp_name


def _has_bottleneck_hooks(model: nn.Module) -> bool:
    return any(isinstance(hook, _AdapterHook) for m in model.modules() for hook in m._forward_hooks.values())


class BottleneckModel(nn.Module):
    """A causal LM with bottleneck adapters; the base is frozen, only the adapters train.

    Attribute access that this class does not define falls through to the base model (``config``,
    ``device``, ``gradient_checkpointing_enable``, ``enable_input_require_grads``, ...), as with peft's
    ``PeftModel``. Parameter names: ``base_model.<base name>`` (frozen) and
    ``adapters.<layer>.<attention|mlp>.<down|up>.<weight|bias>`` (trainable).

    Args:
        model: the base causal LM (a transformers ``PreTrainedModel``); it is modified in place (frozen,
            hooks added) and owned by this wrapper from now on.
        config: the adapter's hyperparameters.

    Raises:
        PeftrecError: the model already carries bottleneck adapters, or its blocks cannot be found.
    """

    def __init__(self, model: PreTrainedModel, config: BottleneckConfig) -> None:
        super().__init__()
        if isinstance(model, BottleneckModel) or _has_bottleneck_hooks(model):
            raise PeftrecError(
                "bottleneck adapter: this model already has bottleneck adapters; wrap a fresh base model"
            )
        layers_path, layers, attention_name, mlp_name = _find_layers(model, config)
        hidden = _hidden_size(model)
        size = config.resolve_bottleneck_size(hidden)
        # Remember what was resolved, so a saved folder reloads onto exactly the same modules.
        self.adapter_config = dataclasses.replace(
            config, layers_module=layers_path, attention_module=attention_name, mlp_module=mlp_name
        )
        self.hidden_size, self.bottleneck_dim = hidden, size
        model.requires_grad_(False)
        self.base_model = model
        self.adapters = nn.ModuleList()
        self._hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        where = (
            {"mlp": mlp_name} if attention_name is None else {"attention": attention_name, "mlp": mlp_name}
        )
        for index, block in enumerate(layers):
            device = next(block.parameters()).device
            per_block = nn.ModuleDict()
            for kind, child_name in where.items():
                adapter = BottleneckAdapter(
                    hidden,
                    size,
                    config.nonlinearity,
                    float(config.dropout),
                    device=device,
                    dtype=torch.float32,
                )
                per_block[kind] = adapter
                target = block.get_submodule(child_name)
                hook = _AdapterHook(adapter, f"{layers_path}.{index}.{child_name}")
                self._hook_handles.append(target.register_forward_hook(hook))
            self.adapters.append(per_block)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":  # not registered yet (during __init__): avoid infinite recursion
                raise
            return getattr(self.base_model, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the base model (its hooks apply the adapters); every argument passes through.

        Returns:
            Whatever the base model returns (a ``CausalLMOutputWithPast`` with ``.logits``).
        """
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Generate with the adapted model (delegates to the base model's ``generate``).

        Returns:
            The base model's ``generate`` output.
        """
        return self.base_model.generate(*args, **kwargs)

    def get_base_model(self) -> PreTrainedModel:
        """The wrapped base model (its hooks still apply the adapters; see :meth:`unload`).

        Returns:
            The base model.
        """
        return self.base_model

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context manager: inside it, the model computes exactly what the base computes."""
        adapters = [m for m in self.adapters.modules() if isinstance(m, BottleneckAdapter)]
        previous = [a.enabled for a in adapters]
        for adapter in adapters:
            adapter.enabled = False
        try:
            yield
        finally:
            for adapter, was in zip(adapters, previous, strict=True):
                adapter.enabled = was

    def unload(self) -> PreTrainedModel:
        """Remove the adapters' hooks and return the base model as it was (still frozen).

        Returns:
            The base model, with no adapters attached.
        """
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()
        return self.base_model

    def merge_and_unload(self, *args: Any, **kwargs: Any) -> PreTrainedModel:
        """Refuse: a bottleneck adapter cannot be merged into the base weights.

        Raises:
            PeftrecError: always.
        """
        raise PeftrecError(
            "a bottleneck adapter cannot be merged into the base model: it is nonlinear "
            "(x + W_up * act(W_down * x)), unlike LoRA's linear W + BA. Keep the base model and the adapter "
            "folder and load them with BottleneckModel.from_pretrained(base, folder); use LoRA if you need "
            "a single merged model."
        )

    def print_trainable_parameters(self) -> None:
        """Print the trainable and total parameter counts, in peft's format."""
        trainable, total = count_parameters(self)
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the adapter in peft's folder layout, atomically.

        ``adapter_config.json`` holds ``"peft_type": "BOTTLENECK"``, ``base_model_name_or_path`` and the
        config (with the resolved module paths); ``adapter_model.safetensors`` holds the adapter weights
        only. Everything is written into a temporary sibling folder that then replaces ``folder``, so a
        crash never leaves a half-written adapter.

        Args:
            folder: destination (replaced if it exists).

        Returns:
            The folder.
        """
        from peftrec import __version__

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        info = {
            "peft_type": PEFT_TYPE,
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": getattr(self.base_model, "name_or_path", None) or None,
            **self.adapter_config.to_dict(),
            "hidden_size": self.hidden_size,
            "bottleneck_dim": self.bottleneck_dim,
            "peftrec_version": __version__,
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        # Keys are the wrapper's own parameter names (adapters.<layer>.<attention|mlp>.<down|up>.*)
        tensors = {
            f"adapters.{k}": v.detach().to("cpu").contiguous() for k, v in self.adapters.state_dict().items()
        }
        save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        return swap_in(tmp, folder)

    @classmethod
    def from_pretrained(
        cls, base_model: PreTrainedModel, folder: str | Path, *, is_trainable: bool = False
    ) -> BottleneckModel:
        """Attach a saved adapter to a base model.

        Args:
            base_model: a fresh base model of the same architecture the adapter was trained on.
            folder: a folder written by :meth:`save_pretrained`.
            is_trainable: keep the adapters trainable (to resume training); by default they are frozen
                and the model is in eval mode, as with ``PeftModel.from_pretrained``.

        Returns:
            The wrapped model, computing what the saved model computed.

        Raises:
            PeftrecError: the folder is not a bottleneck adapter, or does not fit this base model.
        """
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise PeftrecError(
                f"{folder} is not an adapter folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        saved = json.loads(config_path.read_text())
        if saved.get("peft_type") != PEFT_TYPE:
            raise PeftrecError(
                f"{folder} holds a {saved.get('peft_type')!r} adapter, not a bottleneck adapter; "
                "load it with peft.PeftModel.from_pretrained"
            )
        config = BottleneckConfig.from_dict(saved)
        hidden = _hidden_size(base_model)
        if saved.get("hidden_size") not in (None, hidden):
            raise PeftrecError(
                f"the adapter in {folder} was trained on a model with hidden size {saved['hidden_size']} "
                f"({saved.get('base_model_name_or_path')}); this base model's is {hidden}"
            )
        model = cls(base_model, config)
        tensors = load_file(weights_path)
        expected = {f"adapters.{k}" for k in model.adapters.state_dict()}
        try:
            if set(tensors) != expected:
                missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
                raise PeftrecError(
                    f"the adapter weights in {folder} do not fit this base model: missing {missing[:4]}"
                    f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                    f"{'...' if len(unexpected) > 4 else ''}"
                )
            try:
                # Copies into the existing fp32 weights (whatever dtype was saved) on the adapters' device.
                model.adapters.load_state_dict(
                    {k.removeprefix("adapters."): v for k, v in tensors.items()}, strict=True
                )
            except RuntimeError as err:
                raise PeftrecError(
                    f"the adapter weights in {folder} do not fit this base model: {err}"
                ) from err
        except PeftrecError:
            model.unload()  # leave the caller's base model as it was given
            raise
        if not is_trainable:
            model.adapters.requires_grad_(False)
            model.eval()
        return model


def apply_bottleneck(model: PreTrainedModel, config: BottleneckConfig) -> BottleneckModel:
    """Wrap ``model`` with bottleneck adapters: the base is frozen, only the adapters train.

    Trainable parameters: ``n_adapters * (2 * hidden * bottleneck + bottleneck + hidden)`` (down weight
    and bias, up weight and bias), with ``n_adapters = 2 * n_layers`` for houlsby and ``n_layers`` for
    pfeiffer.

    Args:
        model: the base causal LM (modified in place: frozen, hooks added).
        config: the adapter's hyperparameters.

    Returns:
        The wrapped model; at initialisation it computes exactly what ``model`` computed.

    Raises:
        PeftrecError: the decoder blocks or their attention/MLP modules cannot be found (the message
            lists the block's children), or the config does not fit the model.
    """
    return BottleneckModel(model, config)
