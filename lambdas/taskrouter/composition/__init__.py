"""The composition roots: each function's objects built once per execution environment from its
settings, the core given the adapters to outside systems (`taskrouter.adapters`, one module each).
`router_runtime` builds the router of the router function, make local and `taskrouter eval --target
local`; `teacher_runtime` the shadow teacher and record store of the teacher function."""
