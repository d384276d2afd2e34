"""rnn_jax.loop_ops on hand-written HLO text: a nested loop's body counted as by hand."""

from rnn_jax import loop_ops

# --- loop_ops ---------------------------------------------------------------------------------
# Trimmed from XLA:CPU's text of `lax.scan` over a body that runs a `fori_loop` (jaxlib 0.10.2):
# the inner loop sits in a computation the outer body `call`s. Hand count, bookkeeping left out:
# inner body: copy.2, add_fusion, wrapped_add.1 (3); outer body: copy.16, copy.10, wrapped_add,
# slice_fusion, call, dus_fusion (6). `while.19` is a get-tuple-element named like a loop.
NESTED = """HloModule jit_f, is_scheduled=true

%fused_dus (param_0.2: f32[5,4], param_1.6: s32[], param_2.4: f32[4]) -> f32[5,4] {
  %param_0.2 = f32[5,4]{1,0} parameter(0)
  %param_2.4 = f32[4]{0} parameter(2)
  %bitcast.3 = f32[1,4]{1,0} bitcast(%param_2.4)
  %param_1.6 = s32[] parameter(1)
  %constant.24 = s32[] constant(0)
  ROOT %dynamic_update_slice.2 = f32[5,4]{1,0} dynamic-update-slice(%param_0.2, %bitcast.3, %param_1.6, %constant.24), metadata={op_name="jit(f)/while/body/dus"}
}

%fused_add (param_0.1: s32[], param_1.4: f32[4]) -> f32[4] {
  %param_1.4 = f32[4]{0} parameter(1)
  %sin.5 = f32[4]{0} sine(%param_1.4)
  ROOT %add.23 = f32[4]{0} add(%sin.5, %param_1.4)
}

%inner_body (arg_tuple.8: (s32[], f32[4], f32[4])) -> (s32[], f32[4], f32[4]) {
  %arg_tuple.8 = (s32[], f32[4]{0}, f32[4]{0}) parameter(0), metadata={op_name="jit(f)/while"}
  %constant.22 = s32[] constant(1)
  %get-tuple-element.66 = f32[4]{0} get-tuple-element(%arg_tuple.8), index=2
  %get-tuple-element.61 = s32[] get-tuple-element(%arg_tuple.8), index=0
  %copy.2 = s32[] copy(%get-tuple-element.61)
  %add_fusion = f32[4]{0} fusion(%copy.2, %get-tuple-element.66), kind=kLoop, calls=%fused_add
  %wrapped_add.1 = s32[] fusion(%copy.2, %constant.22), kind=kLoop, calls=%wrapped_add_computation
  ROOT %tuple.18 = (s32[], f32[4]{0}, f32[4]{0}) tuple(%wrapped_add.1, %add_fusion, %get-tuple-element.66)
}

%inner_loop (tuple.22: (s32[], f32[4], f32[4])) -> (s32[], f32[4], f32[4]) {
  %tuple.22 = (s32[], f32[4]{0}, f32[4]{0}) parameter(0)
  ROOT %while.10 = (s32[], f32[4]{0}, f32[4]{0}) while(%tuple.22), condition=%inner_cond, body=%inner_body, backend_config={"known_trip_count":{"n":"3"}}
}

%outer_body (arg_tuple.5: (s32[], f32[4], f32[5,4], f32[5,4], f32[5,4], /*index=5*/f32[5,4])) -> (s32[], f32[4], f32[5,4], f32[5,4], f32[5,4], /*index=5*/f32[5,4]) {
  %arg_tuple.5 = (s32[], f32[4]{0}, f32[5,4]{1,0}, f32[5,4]{1,0}, f32[5,4]{1,0}, /*index=5*/f32[5,4]{1,0}) parameter(0)
  %constant.1 = s32[] constant(0)
  %get-tuple-element.73 = f32[5,4]{1,0} get-tuple-element(%arg_tuple.5), index=2
  %get-tuple-element.71 = s32[] get-tuple-element(%arg_tuple.5), index=0
  %copy.16 = s32[] copy(%constant.1)
  %copy.10 = s32[] copy(%get-tuple-element.71)
  %wrapped_add = s32[] fusion(%copy.10, %constant.1), kind=kLoop, calls=%wrapped_add_computation
  %slice_fusion = f32[4]{0} fusion(%get-tuple-element.73, %copy.10), kind=kLoop, calls=%absent
  %tuple.16 = (s32[], f32[4]{0}, f32[4]{0}) tuple(%copy.16, %slice_fusion, %slice_fusion)
  %call = (s32[], f32[4]{0}, f32[4]{0}) call(%tuple.16), to_apply=%inner_loop, frontend_attributes={xla_cpu_small_call="true"}
  %get-tuple-element.76 = f32[4]{0} get-tuple-element(%call), index=1
  %dus_fusion = f32[5,4]{1,0} fusion(%get-tuple-element.73, %copy.10, %get-tuple-element.76), kind=kLoop, calls=%fused_dus
  ROOT %tuple.21 = (s32[], f32[4]{0}, f32[5,4]{1,0}, f32[5,4]{1,0}, f32[5,4]{1,0}, /*index=5*/f32[5,4]{1,0}) tuple(%wrapped_add, %get-tuple-element.76, %dus_fusion, %get-tuple-element.73, %get-tuple-element.73, %get-tuple-element.73)
}

ENTRY %main.9 (xs.1: f32[5,4]) -> f32[5,4] {
  %xs.1 = f32[5,4]{1,0} parameter(0), metadata={op_name="xs"}
  %w = (s32[], f32[4]{0}, f32[5,4]{1,0}, f32[5,4]{1,0}, f32[5,4]{1,0}, /*index=5*/f32[5,4]{1,0}) while(%t), condition=%outer_cond, body=%outer_body, metadata={op_name="jit(f)/while"}
  ROOT %while.19 = f32[5,4]{1,0} get-tuple-element(%w), index=2, metadata={op_name="jit(f)/while"}
}
"""  # noqa: E501


def test_loop_ops_counts_a_nested_loop_as_hand_counted():
    inner, outer = loop_ops.loop_bodies(NESTED)
    assert [(i.name, i.root) for i in inner] == [
        ("copy.2", "copy"),
        ("add_fusion", "add"),
        ("wrapped_add.1", ""),  # its computation is not in the text
    ]
    assert [i.name for i in outer] == [
        "copy.16",
        "copy.10",
        "wrapped_add",
        "slice_fusion",
        "call",
        "dus_fusion",
    ]
    assert outer[4].shapes == ((), (4,), (4,)) and outer[5].root == "dynamic-update-slice"
    assert loop_ops.ops_per_step(NESTED) == [3, 6]
    assert loop_ops.whole_buffer_writes(NESTED, 5) == []


# A loop body (time = 5) with a bitcast (no kernel: not counted) and a fusion producing a
# rank-1 `[5]` array (not a `[time, ...]` buffer: rank >= 2 only), beside one real rewrite.
SMALL = """HloModule small

%fused_mul (p: f32[5,4]) -> f32[5,4] {
  %p = f32[5,4]{1,0} parameter(0)
  ROOT %m = f32[5,4]{1,0} multiply(%p, %p)
}

%body (arg: (s32[], f32[5,4], f32[5])) -> (s32[], f32[5,4], f32[5]) {
  %arg = (s32[], f32[5,4]{1,0}, f32[5]{0}) parameter(0)
  %b = f32[5,4]{1,0} get-tuple-element(%arg), index=1
  %v = f32[5]{0} get-tuple-element(%arg), index=2
  %flat = f32[20]{0} bitcast(%b)
  %vec = f32[5]{0} negate(%v)
  %rewrite = f32[5,4]{1,0} fusion(%b), kind=kLoop, calls=%fused_mul
  ROOT %r = (s32[], f32[5,4]{1,0}, f32[5]{0}) tuple(%i, %rewrite, %vec)
}

ENTRY %main (a: f32[5,4]) -> f32[5,4] {
  %w = (s32[], f32[5,4]{1,0}, f32[5]{0}) while(%t0), condition=%cond, body=%body
}
"""


def test_bitcasts_are_not_counted_and_rank_1_arrays_are_not_time_buffers():
    assert loop_ops.ops_per_step(SMALL) == [2]
    assert [(i.name, i.root) for i in loop_ops.whole_buffer_writes(SMALL, 5)] == [
        ("rewrite", "multiply")
    ]
