"""Turn an ``nn.Module`` into the engine's node list with ``torch.fx``.

``build_nodes(model, x, params)`` traces the model symbolically, evaluates the traced graph once on
``x`` to learn shapes and constants, and keeps the nodes whose value is a floating tensor that
depends on ``x`` and reaches the output. Each becomes an :class:`EngineNode` with a hand-written
rule where one exists (ENGINE.md table) and the generic ``torch.func`` rule otherwise. Values that do
not depend on ``x`` (buffers, shapes, sizes) are folded in as constants.

Anything the engine cannot represent faithfully raises :class:`EngineUnsupported` with the reason:
an untraceable model, several inputs or outputs, parameters transformed outside a layer, BatchNorm
using batch statistics, Dropout in training mode, in-place tensor methods.
"""
from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.node import map_arg
from torch.func import functional_call

from .layers import BatchNormRule, ConvRule, GenericRule, LinearRule
from .rules import (ActivationRule, AddRule, AvgPoolRule, CatRule, LinearMapRule, MaxPoolRule, ReshapeRule, Rule,
                    ScaleRule)


class EngineUnsupported(Exception):
    """The engine cannot represent this model exactly; ``str(error)`` is the reason."""


@dataclass
class EngineNode:
    """One node: ``rule`` computes it from the engine nodes ``inputs`` (0 is ``x``)."""

    name: str
    rule: Rule
    inputs: list[int]


_ACTIVATION_MODULES = {
    nn.Sigmoid: lambda m: ("sigmoid", 0.0, 20.0),
    nn.Tanh: lambda m: ("tanh", 0.0, 20.0),
    nn.ReLU: lambda m: ("relu", 0.0, 20.0),
    nn.LeakyReLU: lambda m: ("leaky_relu", m.negative_slope, 20.0),
    nn.ELU: lambda m: ("elu", m.alpha, 20.0),
    nn.GELU: lambda m: ("gelu_tanh" if m.approximate == "tanh" else "gelu", 0.0, 20.0),
    nn.SiLU: lambda m: ("silu", 0.0, 20.0),
    nn.Softplus: lambda m: ("softplus", float(m.beta), float(m.threshold)),
}
_ACTIVATION_FUNCTIONS = {
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", "sigmoid": "sigmoid",
    torch.tanh: "tanh", F.tanh: "tanh", "tanh": "tanh",
    torch.relu: "relu", F.relu: "relu", "relu": "relu",
    F.leaky_relu: "leaky_relu", F.elu: "elu", F.gelu: "gelu", F.silu: "silu", F.softplus: "softplus",
}
_ACTIVATION_CALLS = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "silu": F.silu,
    "leaky_relu": lambda a, p, t: F.leaky_relu(a, p), "elu": lambda a, p, t: F.elu(a, p),
    "gelu": F.gelu, "gelu_tanh": lambda a: F.gelu(a, approximate="tanh"),
    "softplus": lambda a, p, t: F.softplus(a, p, t),
}
_RESHAPES = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "flatten", "view", "reshape", "squeeze",
             "unsqueeze", "contiguous", "view_as", "reshape_as"}
_LINEAR_MAPS = {torch.permute, torch.transpose, torch.mean, torch.sum, torch.narrow, torch.select, torch.stack,
                operator.getitem, operator.neg, torch.neg, F.pad, F.avg_pool1d, torch.chunk, torch.split,
                "permute", "transpose", "mean", "sum", "narrow", "select", "neg", "expand", "expand_as", "t",
                "repeat", "movedim", "unflatten"}
_ADDS = {operator.add: 1.0, operator.iadd: 1.0, torch.add: 1.0, "add": 1.0,
         operator.sub: -1.0, operator.isub: -1.0, torch.sub: -1.0, "sub": -1.0}
_SCALES = {operator.mul, operator.imul, torch.mul, "mul", operator.truediv, operator.itruediv, torch.div, "div"}


def _activation_spec(target, args, kwargs, const):
    """(act, alpha, threshold) for a functional activation call, reading its non-tensor arguments."""
    act = _ACTIVATION_FUNCTIONS[target]
    extra = [const(a) for a in args[1:]]
    if act == "leaky_relu":
        return act, float(kwargs.get("negative_slope", extra[0] if extra else 0.01)), 20.0
    if act == "elu":
        return act, float(kwargs.get("alpha", extra[0] if extra else 1.0)), 20.0
    if act == "gelu":
        return ("gelu_tanh" if kwargs.get("approximate", "none") == "tanh" else "gelu"), 0.0, 20.0
    if act == "softplus":
        beta = kwargs.get("beta", extra[0] if extra else 1.0)
        return act, float(beta), float(kwargs.get("threshold", extra[1] if len(extra) > 1 else 20.0))
    return act, 0.0, 20.0


def _activation_fn(act, alpha, threshold):
    call = _ACTIVATION_CALLS[act]
    if act in ("leaky_relu", "elu", "softplus"):
        return lambda a: call(a, alpha, threshold)
    return call


_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _traced_graph(model: nn.Module) -> torch.fx.Graph:
    """``torch.fx.symbolic_trace(model).graph``, cached per model while its module tree is unchanged
    (tracing is 1.5 ms of the 2.9 ms engine set-up on the 784-512-256-10 MLP)."""
    signature = tuple((name, id(m), m.training) for name, m in model.named_modules())
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # fx raises many types (TraceError, TypeError, NotImplementedError, ...)
        raise EngineUnsupported(f"torch.fx cannot trace {type(model).__name__}: {error}") from error
    _TRACES[model] = (signature, graph)
    return graph


class _Builder:
    def __init__(self, model: nn.Module, x: torch.Tensor, params: list[nn.Parameter]):
        self.model = model
        self.slot_of = {id(p): i for i, p in enumerate(params)}
        self.graph = _traced_graph(model)
        self.x = x
        self.value: dict[torch.fx.Node, Any] = {}
        self.engine_index: dict[torch.fx.Node, int] = {}
        self.param_of: dict[torch.fx.Node, int] = {}  # get_attr node → trainable slot
        self.nodes: list[EngineNode] = [EngineNode("x", None, [])]
        self.param_only: set[torch.fx.Node] = set()  # tensors computed from parameters but not from x
        self.tuples: dict[torch.fx.Node, tuple] = {}  # x-dependent nodes returning a tuple of tensors

    # ------------------------------------------------------------------------------ classify
    def const(self, arg):
        return map_arg(arg, lambda n: self.value[n])

    def _inputs(self, node, among=None) -> list[torch.fx.Node]:
        """The distinct graph nodes ``node`` reads, in order; only those in ``among`` when given."""
        found: list[torch.fx.Node] = []
        map_arg((node.args, node.kwargs),
                lambda n: found.append(n) if (among is None or n in among) and n not in found else None)
        return found

    def _module_params(self, module: nn.Module) -> list[tuple[str, int]]:
        return [(name, self.slot_of[id(p)]) for name, p in module.named_parameters() if id(p) in self.slot_of]

    # ------------------------------------------------------------------------------ building
    def run(self) -> tuple[list[EngineNode], int]:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise EngineUnsupported(f"the model's forward takes {len(placeholders)} inputs; the engine needs exactly one")
        output = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.value[node] = self.x
                self.engine_index[node] = 0
            elif node.op == "get_attr":
                self._get_attr(node)
            elif node.op == "output":
                output = node.args[0]
            else:
                self._call(node)
        if not isinstance(output, torch.fx.Node) or output not in self.engine_index:
            raise EngineUnsupported("the model must return one tensor that depends on its input")
        return self._prune(self.engine_index[output])

    def _get_attr(self, node):
        value = self.model
        for part in node.target.split("."):
            value = getattr(value, part)
        self.value[node] = value
        if isinstance(value, torch.Tensor) and id(value) in self.slot_of:
            self.param_of[node] = self.slot_of[id(value)]

    def _call(self, node):
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] in self.tuples:
            self._tuple_item(node)
            return
        x_inputs = self._inputs(node, self.engine_index)
        param_inputs = self._inputs(node, self.param_of)
        module = self.model.get_submodule(node.target) if node.op == "call_module" else None
        module_params = self._module_params(module) if module is not None else []
        if isinstance(node.target, str) and node.op == "call_method" and node.target.endswith("_"):
            if x_inputs:
                raise EngineUnsupported(f"in-place tensor method {node.target} at node '{node.name}'")
        value = self._evaluate(node, module)
        self.value[node] = value
        reads_param_only = bool(self._inputs(node, self.param_only))
        if not x_inputs:
            if (param_inputs or module_params or reads_param_only) and isinstance(value, torch.Tensor):
                self.param_only.add(node)
            return
        if reads_param_only:
            raise EngineUnsupported(
                f"node '{node.name}' uses a value computed from trainable parameters outside a layer "
                "(e.g. cls_token.expand(...)); the engine needs parameters to enter layers directly"
            )
        if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
            self.tuples[node] = (module, x_inputs, param_inputs, module_params)
            return
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            return  # sizes, shapes: constants derived from x's shape
        rule = self._rule(node, module, x_inputs, param_inputs, module_params)
        if rule is None:  # an alias (identity, dropout in eval mode)
            self.engine_index[node] = self.engine_index[x_inputs[0]]
            return
        self.engine_index[node] = len(self.nodes)
        self.nodes.append(EngineNode(node.name, rule, [self.engine_index[n] for n in x_inputs]))

    def _tuple_item(self, node):
        """``producer(...)[i]`` of a tuple-returning node (e.g. attention), as its own generic node."""
        producer, index = node.args[0], node.args[1]
        self.value[node] = self.value[producer][index]
        module, x_inputs, param_inputs, module_params = self.tuples[producer]
        rule = self._generic(producer, module, x_inputs, param_inputs, module_params, pick=index)
        self.engine_index[node] = len(self.nodes)
        self.nodes.append(EngineNode(node.name, rule, [self.engine_index[n] for n in x_inputs]))

    def _evaluate(self, node, module):
        args, kwargs = self.const(node.args), self.const(node.kwargs)
        if node.op == "call_module":
            return module(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def _rule(self, node, module, x_inputs, param_inputs, module_params) -> Rule | None:
        """The node's rule over its x-dependent inputs (None: an alias of its input): a hand-written
        one where it applies, else the generic rule."""
        rule = False  # no hand-written rule (None is a valid answer: an alias)
        if node.op == "call_module":
            rule = self._module_rule(node, module, module_params)
        elif not param_inputs:
            rule = self._function_rule(node, x_inputs)
        elif node.target is F.linear and node.args[0] in self.engine_index and len(x_inputs) == 1:
            weight, bias = self._arg(node, 1, "weight"), self._arg(node, 2, "bias")
            if weight in self.param_of and (bias is None or bias in self.param_of):
                rule = LinearRule(self.param_of[weight], None if bias is None else self.param_of[bias])
        if rule is not False:
            return rule
        return self._generic(node, module, x_inputs, param_inputs, module_params)

    @staticmethod
    def _arg(node, position: int, name: str):
        """Argument ``name`` of a call, given by position or by keyword (None when absent)."""
        if len(node.args) > position:
            return node.args[position]
        return node.kwargs.get(name)

    def _module_rule(self, node, module, module_params):
        slots = dict(module_params)
        all_trainable = len(slots) == sum(1 for _ in module.parameters())
        if isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd)):
            return None  # identity, or dropout in eval mode (_check_modules refused training mode)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.affine and not all_trainable:
                return False
            return BatchNormRule(module.running_mean, module.running_var, module.eps,
                                 slots.get("weight"), slots.get("bias"))
        if not all_trainable:
            return False
        if type(module) is nn.Linear:
            return LinearRule(slots["weight"], slots.get("bias"))
        if type(module) is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(module.padding, str):
            return ConvRule(slots["weight"], slots.get("bias"), module.stride, module.padding, module.dilation,
                            module.groups)
        spec = _ACTIVATION_MODULES.get(type(module))
        if spec is not None:
            act, alpha, threshold = spec(module)
            return ActivationRule(act, alpha, threshold, _activation_fn(act, alpha, threshold))
        if type(module) is nn.Flatten:
            return ReshapeRule(lambda a, s=module.start_dim, e=module.end_dim: a.flatten(s, e))
        if type(module) is nn.MaxPool2d and not module.return_indices:
            return MaxPoolRule(dict(kernel_size=module.kernel_size, stride=module.stride, padding=module.padding,
                                    dilation=module.dilation, ceil_mode=module.ceil_mode))
        if type(module) is nn.AvgPool2d:
            return AvgPoolRule(False, dict(kernel_size=module.kernel_size, stride=module.stride, padding=module.padding,
                                           ceil_mode=module.ceil_mode, count_include_pad=module.count_include_pad,
                                           divisor_override=module.divisor_override))
        if type(module) is nn.AdaptiveAvgPool2d:
            return AvgPoolRule(True, dict(output_size=module.output_size))
        return False

    def _function_rule(self, node, x_inputs):
        target, args, kwargs = node.target, node.args, node.kwargs
        first_is_x = bool(args) and args[0] in self.engine_index
        if target in _ACTIVATION_FUNCTIONS and first_is_x and len(x_inputs) == 1:
            act, alpha, threshold = _activation_spec(target, args, kwargs, self.const)
            return ActivationRule(act, alpha, threshold, _activation_fn(act, alpha, threshold))
        if target in _RESHAPES and first_is_x and len(x_inputs) == 1:
            return ReshapeRule(self._bind(node, x_inputs))
        if target in _ADDS and len(args) == 2 and not kwargs:
            sign = _ADDS[target]
            xs = [a in self.engine_index for a in args]
            if args[0] is args[1]:
                return ScaleRule(1.0 + sign)
            if all(xs):
                return AddRule([1.0, sign])
            constant = self.value[args[1 - xs.index(True)]] if isinstance(args[1 - xs.index(True)], torch.fx.Node) \
                else args[1 - xs.index(True)]
            if xs[0]:
                return AddRule([1.0], sign * constant)
            return AddRule([sign], constant)
        if target in _SCALES and len(args) == 2 and not kwargs and sum(a in self.engine_index for a in args) == 1:
            divide = target in (operator.truediv, operator.itruediv, torch.div, "div")
            if divide and args[1] in self.engine_index:
                return False
            other = args[1] if args[0] in self.engine_index else args[0]
            scale = self.value[other] if isinstance(other, torch.fx.Node) else other
            return ScaleRule(1 / scale if divide else scale)
        if target in (torch.cat, torch.concat) and isinstance(args[0], (list, tuple)):
            dim = self.const(args[1]) if len(args) > 1 else kwargs.get("dim", 0)
            pieces = [x_inputs.index(a) if a in self.engine_index else self.value[a] if isinstance(a, torch.fx.Node)
                      else a for a in args[0]]
            return CatRule(pieces, dim)
        if target is F.max_pool2d and first_is_x and not kwargs.get("return_indices", False):
            names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
            spec = dict(zip(names, self.const(args[1:])), **self.const(kwargs))
            return MaxPoolRule(spec)
        if target is F.avg_pool2d and first_is_x:
            names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
            return AvgPoolRule(False, dict(zip(names, self.const(args[1:])), **self.const(kwargs)))
        if target is F.adaptive_avg_pool2d and first_is_x:
            return AvgPoolRule(True, dict(zip(("output_size",), self.const(args[1:])), **self.const(kwargs)))
        if target in _LINEAR_MAPS:
            return LinearMapRule(self._bind(node, x_inputs), len(x_inputs))
        return False

    def _bind(self, node, x_inputs, param_inputs=(), call: Callable | None = None) -> Callable:
        """``fn(*x_values, *params)`` calling the node's target with everything else constant."""
        constants = {n: v for n, v in self.value.items()}
        positions = {n: i for i, n in enumerate(list(x_inputs) + list(param_inputs))}
        op, target = node.op, node.target

        def fn(*values):
            def sub(n):
                return values[positions[n]] if n in positions else constants[n]
            args, kwargs = map_arg(node.args, sub), map_arg(node.kwargs, sub)
            if call is not None:
                return call(*args, **kwargs)
            if op == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            return target(*args, **kwargs)

        return fn

    def _generic(self, node, module, x_inputs, param_inputs, module_params, pick: int | None = None) -> GenericRule:
        if node.op == "call_module":
            names = [name for name, _ in module_params]

            def call(*args, **kwargs):
                return functional_call(module, dict(zip(names, call.params)), args, kwargs)

            bound = self._bind(node, x_inputs, call=call)

            def fn(inputs, params):
                call.params = params
                out = bound(*inputs)
                return out if pick is None else out[pick]

            return GenericRule(fn, tuple(slot for _, slot in module_params))
        bound = self._bind(node, x_inputs, param_inputs)

        def fn(inputs, params):
            out = bound(*inputs, *params)
            return out if pick is None else out[pick]

        return GenericRule(fn, tuple(self.param_of[n] for n in param_inputs))

    # ------------------------------------------------------------------------------- pruning
    def _prune(self, output: int) -> tuple[list[EngineNode], int]:
        """Keep the nodes the output depends on; renumber them (x stays 0)."""
        needed = {output}
        for i in range(output, 0, -1):
            if i in needed:
                needed.update(self.nodes[i].inputs)
        keep = sorted(needed | {0})
        renumber = {old: new for new, old in enumerate(keep)}
        nodes = [self.nodes[0]]
        for old in keep[1:]:
            node = self.nodes[old]
            nodes.append(EngineNode(node.name, node.rule, [renumber[i] for i in node.inputs]))
        return nodes, renumber[output]


def _check_modules(model: nn.Module) -> None:
    """Refuse, before running anything, modules whose forward couples samples or draws randomness."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            raise EngineUnsupported(
                f"BatchNorm '{name}' uses batch statistics (training mode or no running statistics), which couple "
                "the samples; call model.eval(), or use an autograd strategy for the batch-coupled Jacobian"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise EngineUnsupported(f"Dropout '{name}' is in training mode (a random mask per call); call model.eval()")


def build_nodes(model: nn.Module, x: torch.Tensor, params: list[nn.Parameter]) -> tuple[list[EngineNode], int]:
    """Engine nodes of ``model`` at input ``x`` (node 0 is ``x``) and the index of the output node.

    Args:
        model: the ``nn.Module``; its train/eval state is read (BatchNorm, Dropout).
        x: ``(N, …)`` an input of the shape the products will use.
        params: the trainable parameters in ``model.parameters()`` order (the slots).

    Raises:
        EngineUnsupported: with the reason, when the model cannot be represented exactly.
    """
    _check_modules(model)
    builder = _Builder(model, x, params)
    with torch.no_grad():
        return builder.run()
