"""The public API's generic types at run time: ``Task[int]`` subscripts, annotations resolve."""

from __future__ import annotations

import typing

import pyclone
from pyclone import actions, task


def test_task_is_generic_in_its_result() -> None:
    alias = pyclone.Task[int]
    assert typing.get_origin(alias) is pyclone.Task
    assert typing.get_args(alias) == (int,)
    assert task.Task is pyclone.Task


def test_spawn_task_annotations_resolve_and_the_value_comes_back() -> None:
    hints = typing.get_type_hints(pyclone.spawn_task)
    assert typing.get_origin(hints["return"]) is pyclone.Task
    spawned: pyclone.Task[int] = pyclone.spawn_task(abs, (-5,))
    assert spawned.result(timeout=10) == 5
    done: pyclone.Task[int] = pyclone.spawn_task(actions.exit(4))
    assert done.result(timeout=10) == 4
