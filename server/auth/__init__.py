"""Who a caller is and what it may do: tokens, API keys, revocations, channel authorization."""
