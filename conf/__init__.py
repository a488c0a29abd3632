"""The Hydra configs, shipped inside the wheel as the package `backprop_lab.conf` (src/backprop_lab/conf links
here), so that `backprop-lab-train` finds them outside the checkout (docs/install.md)."""
