"""Settings of the test stacks that tests also need to know."""

# The get_feedback stack uses a short global interval so its flow does not wait 2
# minutes; the model interval stays long so a second request for the same model is
# always refused during the session.
FB_GLOBAL_INTERVAL_S = 3
FB_MODEL_INTERVAL_S = 600
# Job TTL of the TTL stack.
TTL_MS = 2000
