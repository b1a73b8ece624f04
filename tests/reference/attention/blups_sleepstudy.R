# Conditional modes (BLUPs) of lme4 on sleepstudy, frozen for tests/test_attention_own_course.py:
# Reaction ~ Days + (Days | Subject), REML. Writes the data, the fit's parameters, ranef and the conditional
# variances (condVar), so the Python side can recompute BLUPs from the same parameters.
library(lme4)
here <- "tests/reference/attention"
data(sleepstudy)
fit <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = TRUE)
write.csv(sleepstudy, file.path(here, "sleepstudy.csv"), row.names = FALSE)
vc <- as.data.frame(VarCorr(fit))
p <- data.frame(intercept = fixef(fit)[1], slope = fixef(fit)[2],
                sd_intercept = vc$sdcor[1], sd_slope = vc$sdcor[2], corr = vc$sdcor[3], sd_residual = sigma(fit))
write.csv(p, file.path(here, "params_R.csv"), row.names = FALSE)
re <- ranef(fit, condVar = TRUE)
pv <- attr(re$Subject, "postVar")
out <- data.frame(Subject = rownames(re$Subject), intercept = re$Subject[, 1], slope = re$Subject[, 2],
                  var_intercept = pv[1, 1, ], cov = pv[1, 2, ], var_slope = pv[2, 2, ])
write.csv(out, file.path(here, "ranef_R.csv"), row.names = FALSE)
cat(R.version.string, "lme4", as.character(packageVersion("lme4")), "\n", file = file.path(here, "R_VERSION.txt"))
