"""The demos: the checkout page's simulated payments, the editor page, the simulated airport."""
