-- Argo CD health for every ecs.operator.dev kind (EcsCluster, EcsTaskDefinition,
-- EcsService, EcsTask, EcsScheduledTask). The status follows kstatus:
--   Stalled=True                       -> Degraded
--   spec not yet observed              -> Progressing
--   suspended EcsScheduledTask         -> Suspended
--   Ready=True                         -> Healthy (a Succeeded EcsTask is Ready)
--   otherwise (Reconciling, no status) -> Progressing
local hs = {}
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end
local function say(c)
  if c == nil then
    return ""
  end
  local reason = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for ecs-operator to report status"
  return hs
end
if obj.metadata.generation ~= nil and (obj.status.observedGeneration == nil
    or obj.status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for ecs-operator to act on the latest spec"
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled)
  return hs
end
if obj.kind == "EcsScheduledTask" and obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: no new runs are started"
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = say(ready)
  return hs
end
hs.status = "Progressing"
hs.message = say(condition("Reconciling") or ready)
return hs
