"""Generation: prompts, the request cache, cost, and the engine that turns examples into generations."""
