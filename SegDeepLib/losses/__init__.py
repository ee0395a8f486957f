"""SegDeepLib.losses"""
