"""What `taskrouter eval` tells before routing (docs/evaluation.md): labels, running tasks and allowed
tasks that the target's task list lacks."""

from taskrouter.core.tasks import Task
from taskrouter.evaluation.dataset import Expected, Turn
from taskrouter.evaluation.runner import warnings_before_routing

TASKS = [Task("follow_up_email", "Draft a follow-up email.")]


def turn(tasks, current_task=None, task=None, event="none"):
    return Turn("c", 0, ({"role": "user", "content": "hi"},), current_task, Expected(task=task, event=event), tasks)


def test_allowed_tasks_the_target_lacks_are_told_with_their_turn_counts():
    said = warnings_before_routing([turn(("follow_up_email", "ghost_task")), turn(("ghost_task",)), turn(None)], TASKS, None)
    assert said == [
        "allowed tasks (a turn's tasks) not in the task list the target routes over, which it ignores: ghost_task "
        "(2 turns); give the task file the dataset came with"
    ]


def test_a_running_task_the_target_lacks_is_told_as_a_label():
    said = warnings_before_routing([turn(("follow_up_email",), current_task="create_one_minute_pitch", event="end")], TASKS, None)
    assert said == ["labels not in the task list the target routes over: create_one_minute_pitch (1 turns); check the "
                    "dataset or the tasks"]  # fmt: skip
