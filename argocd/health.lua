-- Argo CD health for grid.threefold.io kinds (Farm, Node, Deployment, Proposal), modelled on Argo CD's own
-- check for Crossplane resources: Synced=False -> Degraded; Ready=True -> Healthy; Ready=False is Progressing
-- while the operator is still getting there, Degraded when it needs a person.
local hs = {}
local waiting = {Creating = true, Deleting = true, FarmNotReady = true}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for tfgrid-operator to report Ready"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for tfgrid-operator to reconcile generation " .. obj.metadata.generation
  return hs
end
local ready, synced = nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Synced" then synced = c end
end
if synced ~= nil and synced.status == "False" then
  hs.status = "Degraded"
  hs.message = (synced.reason or "ReconcileError") .. ": " .. (synced.message or "")
  return hs
end
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for tfgrid-operator to report Ready"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
if waiting[ready.reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
return hs
