"""smallest-loss: what is the smallest loss my budget can buy?"""
