-- KEYS: an order hash per event (all in one partition). ARGV per event: event id, delivery
-- stage, driver. Applies each with applyStage.
for i = 1, #KEYS do
    applyStage(KEYS[i], ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i])
end
return 1
