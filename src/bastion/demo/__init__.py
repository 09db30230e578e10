"""Worked examples of apps on Bastion; `bastion.demo.support` is the customer-support agent."""
