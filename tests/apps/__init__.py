"""Small apps the tests run under the agent; they know nothing about pilotfish."""
