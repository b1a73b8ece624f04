# Frozen lme4 reference numbers for the substance-use mixed models (tests/test_substance_use_golden.py).
# Run from the repository root:  Rscript tests/reference/substance_use/make_reference.R
# Input: pda.csv and heavy.csv, the use windows (analytics.outcomes.substance_use.use_frame, value in percent) of a
# generated 400-patient clinic (seed 22) with its daily use log. Output: reference.json beside this script.
suppressPackageStartupMessages({library(lme4); library(splines); library(jsonlite)})
out_dir <- "tests/reference/substance_use"
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-3, rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")
summ <- function(m) {
  vc <- as.data.frame(VarCorr(m)); re <- vc[vc$grp != "Residual", ]
  list(fixed = unname(fixef(m)), names = names(fixef(m)), se = unname(sqrt(diag(as.matrix(vcov(m))))),
       sd_intercept = re[is.na(re$var2), "sdcor"][1], sd_slope = re[is.na(re$var2), "sdcor"][2],
       corr = re[!is.na(re$var2), "sdcor"], sd_residual = sigma(m), loglik = as.numeric(logLik(m)), aic = AIC(m),
       n_obs = nobs(m), n_groups = unname(ngrps(m)[1]))
}
ref <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
grid_weeks <- c(4, 13, 26, 39, 52)
for (m in c("pda", "heavy")) {
  d <- read.csv(file.path(out_dir, paste0(m, ".csv")), colClasses = c(patient_id = "character"))
  # reference level: the program with most patients (as the dashboard chooses it)
  n_pat <- tapply(d$patient_id, d$program, function(x) length(unique(x)))
  d$program <- factor(d$program, levels = names(sort(n_pat, decreasing = TRUE)))
  lin <- lmer(value ~ weeks * program + (weeks | patient_id), d, control = ctrl)
  ref[[paste0(m, "_linear_reml")]] <- summ(lin)
  kn <- unname(quantile(d$weeks, c(1, 2) / 3)); bk <- range(d$weeks)
  # by ML: the REML criterion depends on the basis of the fixed effects (a constant log-det term), ML does not
  sp <- lmer(value ~ ns(weeks, knots = kn, Boundary.knots = bk) * program + (weeks | patient_id), d, REML = FALSE,
             control = ctrl)
  grid <- expand.grid(weeks = grid_weeks, program = levels(d$program))
  s <- summ(sp)
  s$predicted <- unname(predict(sp, newdata = grid, re.form = NA))
  s$predicted_program <- as.character(grid$program)
  s$knots <- list(interior = kn, boundary = bk)
  ref[[paste0(m, "_spline_ml")]] <- s
}
ref$prediction_weeks <- grid_weeks
write(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path(out_dir, "reference.json"))
