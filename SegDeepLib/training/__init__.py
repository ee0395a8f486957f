"""SegDeepLib.training"""
