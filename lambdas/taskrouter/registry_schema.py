"""The registry table's key design, shared by the CDK table and the code that reads and writes it.

All tasks live in one partition (`pk = "TASK"`), sorted by name (`sk`): "list all tasks" is one
Query that comes back sorted, "get one task" is one GetItem, and neither needs a Scan. A task list
is small (tens to hundreds of items), far under a partition's limits.

A deleted task stays as a tombstone (`deleted = true`, its version kept, its text removed), so that a
task created again under the same name continues above its last version; readers skip tombstones.
"""

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TASK_PARTITION = "TASK"
DELETED = "deleted"
